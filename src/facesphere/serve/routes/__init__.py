"""The service's endpoints, one router per area: `system` (health), `analysis` (detect, embed,
verify) and `galleries` (galleries, subjects, faces, identify)."""
