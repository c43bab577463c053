"""cribwatch gateway: sensors in (MQTT, GPIO), alarm core, alerts out."""
