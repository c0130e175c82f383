"""Reading files from the internet without trusting them: restricted unpickling, safe extraction."""
