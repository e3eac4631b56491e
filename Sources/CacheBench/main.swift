print("cache-bench: arrives with the [demo-bench] issue")
