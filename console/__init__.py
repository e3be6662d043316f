"""The operators' console: the admin site, its model admins, selectors and templates."""
