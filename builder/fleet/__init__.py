"""The workstation's side of the fleet's MQTT broker: ``bundle publish --notify`` announces
a new index serial, ``bundle fleet status`` reads the devices' status and telemetry."""
