"""Alert channels, one module each: MQTT (pagers, tablets), the gateway's buzzer and LED, the log."""
