"""An instrument's history: every registration, change, result, revocation and lifecycle step."""
