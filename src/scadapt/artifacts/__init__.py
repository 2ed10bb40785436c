"""What scadapt keeps in the MLflow artifact store besides figures and tables: backbone
checkpoints (:mod:`.checkpoints`) and trained annotators (:mod:`.annotators`). Above the
strategies, which rebuild a saved annotator; below the jobs that log and read them."""
