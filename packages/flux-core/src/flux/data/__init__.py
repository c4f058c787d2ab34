"""Data: `Batch` and `Seq` (read-only sequences over one stacked array) and their utilities,
labels (`onehot`, `onecold`) and `accuracy`."""
