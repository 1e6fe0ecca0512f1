"""tensorchat tests."""
