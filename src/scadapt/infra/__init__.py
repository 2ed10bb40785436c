"""What every layer stands on: errors and the redaction of secrets in them, the option
declarations, devices, writable folders, databases and the locks workers share, interrupts,
notices said once, and lazily imported names."""
