"""Response times: tracker, snapshot, views, SLA alerts, business hours, sketches, settings."""
