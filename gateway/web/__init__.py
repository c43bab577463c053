"""The site's web app (docs/web.md): the staff alarm board and the technician console, served by the gateway."""
