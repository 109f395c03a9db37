# One image for every CMS role (web, worker, beat) and the station agent; the command picks the role.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 CMS_INSTANCE_DIR=/var/lib/cms
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpcsclite1 libpcsclite-dev swig gcc pcscd \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN useradd --system --home /var/lib/cms cms && mkdir -p /var/lib/cms && chown cms /var/lib/cms \
 && CMS_ENVIRONMENT=development python manage.py collectstatic --noinput -v0
USER cms
EXPOSE 8000
CMD ["gunicorn", "cms.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]
