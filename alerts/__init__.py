"""cribwatch alerts: the channels that reach staff (MQTT, buzzer and LED, log)."""
