"""metreg: the legal register of measuring instruments and their verification schedule."""
