"""Calendar feeds: an enterprise's due dates in the calendar apps of its people."""
