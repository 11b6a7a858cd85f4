"""Training losses: coverage (likelihood) and quality (adversarial) criteria."""
