FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 dealledger
WORKDIR /srv/dealledger
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
# Editable install keeps migrations/ beside app/, where the CLI finds them.
RUN pip install -e .
USER dealledger
EXPOSE 8000
# Expects DATABASE_URL (postgresql://user:password@host:port/dbname); no embedded server here.
CMD ["dealledger", "serve", "--host", "0.0.0.0"]
