"""dealledger: event-sourced deal progression."""
