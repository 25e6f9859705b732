//! The zmlx patch layer.
