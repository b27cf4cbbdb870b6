"""The appliance's exceptions. Each kind maps to one process exit status."""


class ApplianceError(Exception):
    """Base of every error the appliance reports to the user as one line."""

    exit_status = 1


class ConfigError(ApplianceError):
    """A bad setting, an unknown key or an unreadable env file."""

    exit_status = 2


class ModelError(ApplianceError):
    """A missing, corrupt or mismatched model, manifest, labels or vocabulary file."""

    exit_status = 3


class InvalidValueError(ValueError):
    """A setting's text that says why it is not accepted, for the message that names the key."""
