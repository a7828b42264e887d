FROM python:3.11-slim
WORKDIR /srv/paygate
COPY pyproject.toml setup.py requirements-production.lock ./
COPY paygate ./paygate
COPY migrations ./migrations
COPY wsgi.py gunicorn.conf.py ./
# Exactly the locked versions, hashes checked (README "Dependencies"), then the service itself.
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements-production.lock \
    && pip install --no-cache-dir --no-deps --no-build-isolation .
RUN useradd --system paygate && mkdir -p instance && chown paygate instance
USER paygate
EXPOSE 8000
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "4", "--timeout", "30", "wsgi:app"]
