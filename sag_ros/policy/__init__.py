"""sag_ros."""
