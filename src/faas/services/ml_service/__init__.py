"""ML service: tabular datasets, training jobs, a versioned model registry with aliases,
realtime and KServe V2 serving, batch prediction and drift monitoring."""
