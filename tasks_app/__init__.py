"""The task scheduler: admission, leases, recovery and drain around a user's processor."""
