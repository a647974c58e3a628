"""Result documents: verification certificates, result notices, calibration certificates, inspections."""
