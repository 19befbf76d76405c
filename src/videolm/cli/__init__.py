"""The `videolm` command."""
