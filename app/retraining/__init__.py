"""The closed loop: monitoring alerts that start a retraining, decided and recorded."""
