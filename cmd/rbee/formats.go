package main

import "github.com/rbee-dev/rbee/worker"

// checkResponseFormat is the queen's check of a request's response format:
// the workers' own compilation, so that a schema they would refuse is a 400
// before the job is queued.
var checkResponseFormat = worker.CheckResponseFormat
