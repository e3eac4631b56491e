print("user-lookup: arrives with the [demo-bench] issue")
