"""Pure scoring functions: answer extraction, accuracy, and later ROUGE/ICD/statistics."""
