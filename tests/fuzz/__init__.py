"""Raw-socket fuzzing of a real proxy process."""
