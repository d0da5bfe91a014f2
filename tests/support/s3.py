"""moto S3 server fixture (see issue 3)."""
