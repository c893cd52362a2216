"""The fleet over MQTT (the optional ``fleet`` extra, paho-mqtt): a device's retained status,
its telemetry and update notices (``agent``), on topics under ``edgebundle/<fleet>/``.

Only ``address`` and ``documents`` are imported without paho; ``session`` imports it, and
``bundle-runtime serve`` imports the agent only for ``--fleet``.
"""
