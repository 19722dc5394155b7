"""Reading task datasets from paths, file://, s3://, hf://, configmap:// and builtin:// URIs."""

from stratos.data.sources import DataSourceError, iter_records, open_source, read_text

__all__ = ["DataSourceError", "iter_records", "open_source", "read_text"]
