# The metreg image: the API (`metreg serve`), the worker (`metreg worker`) and the one-shot migration.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml constraints.txt README.md ./
COPY service ./service
COPY jobs ./jobs
COPY bench ./bench
COPY schema ./schema
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --system --no-create-home metreg
USER metreg
EXPOSE 8000
CMD ["metreg", "serve", "--host", "0.0.0.0", "--port", "8000"]
