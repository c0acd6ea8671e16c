"""The Alertmanager bridge's decisions: alert.v1 to alerts, outcomes, offsets to commit."""
