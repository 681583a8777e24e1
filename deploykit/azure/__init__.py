"""Azure: the provider over the SDKs, targets, credentials, API versions, per-type plug-ins."""
