"""The annotator: a backbone (or none) with a classification head, as one saved model."""
