"""edgebundle workstation side: convert, quantize, check, pack and sign XGBoost models."""
