FROM python:3.11-slim

WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    FINDME_HOST=0.0.0.0 FINDME_DEVELOPMENT=false FINDME_DATA_DIR=/data

# Dependencies first: this layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN mkdir findme && touch findme/__init__.py \
    && pip install --no-cache-dir . \
    && pip uninstall -y findme && rm -rf findme

COPY findme ./findme
COPY alembic ./alembic
COPY alembic.ini ./
COPY templates ./templates
COPY static ./static
RUN pip install --no-cache-dir --no-deps -e .

VOLUME /data
EXPOSE 8000
# `findme serve` migrates first, then serves with bounded headers and timed-out slow bodies.
CMD ["findme", "serve"]
