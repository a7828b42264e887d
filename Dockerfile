FROM python:3.11-slim
WORKDIR /srv/paygate
COPY pyproject.toml setup.py ./
COPY paygate ./paygate
COPY migrations ./migrations
COPY wsgi.py gunicorn.conf.py ./
RUN pip install --no-cache-dir .
RUN useradd --system paygate && mkdir -p instance && chown paygate instance
USER paygate
EXPOSE 8000
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "4", "--timeout", "30", "wsgi:app"]
