"""Streaming through Kafka: ``ml-api stream`` consumes prediction requests from a topic and
produces the answers to another, at least once.

``config`` the stream settings; ``payload`` message value -> decoded request; ``messages``
answer and error records (keys, headers); ``lane`` one partition's messages in offset order;
``kafka`` the only module that talks to aiokafka; ``consumer`` the loop (back-pressure,
commits, rebalances, drain); ``runner`` the process (worker lifecycle, signals, /metrics).
"""
