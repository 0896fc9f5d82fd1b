// Package schemas is rbee's wire contract: subject names and the messages that
// travel on them. It is the only package that queen, hive and worker share.
//
// Every message is JSON. Its version is the "v2" token in the subject; a change
// that breaks readers gets a new token, never an edit in place. v2 replaced
// v1's reply subjects with the job's event stream (see Subjects.JobEvents).
package schemas
