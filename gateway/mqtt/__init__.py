"""The only modules that import paho-mqtt or aiomqtt: the connection rules and the gateway's MQTT link."""
