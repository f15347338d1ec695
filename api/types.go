// Package api holds the JSON types of the node's HTTP API (/v1/...) and a
// client for it. The server side lives in package node; the CLI uses the
// client. Field names are the public interface: change them only additively.
package api

import (
	"encoding/json"
	"time"
)

// Error is the body of every 4xx/5xx response.
type Error struct {
	Message string `json:"error"`
	// Field is the JSON path of the offending field of a request body, if any.
	Field string `json:"field,omitempty"`
	// StatusCode is the HTTP status the error came with (client side only).
	StatusCode int `json:"-"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Message
	}
	return e.Message
}

// NodeInfo is GET /v1/node.
type NodeInfo struct {
	PeerID  string   `json:"peerId"`
	Addrs   []string `json:"addrs"` // full multiaddrs ending in /p2p/<id>
	Pool    string   `json:"pool"`
	Version string   `json:"version"`
	Gateway string   `json:"gateway,omitempty"` // base URL of the gateway, if on
}

// GPU is one GPU of a peer.
type GPU struct {
	Name   string `json:"name"`
	Memory int64  `json:"memory"` // bytes
}

// Load is a peer's current task load.
type Load struct {
	Running int `json:"running"`
	Queued  int `json:"queued"`
	Slots   int `json:"slots"`
}

// Peer is one row of GET /v1/peers: the capacity table as this node sees it.
type Peer struct {
	PeerID             string            `json:"peerId"`
	Self               bool              `json:"self,omitempty"`
	CPU                float64           `json:"cpu"`        // cores
	Memory             int64             `json:"memory"`     // bytes offered
	MemoryFree         int64             `json:"memoryFree"` // bytes
	DiskFree           int64             `json:"diskFree"`   // bytes
	GPUs               []GPU             `json:"gpus"`
	Executors          []string          `json:"executors"`
	WarmModels         []string          `json:"warmModels"`
	Templates          []string          `json:"templates,omitempty"`
	Labels             map[string]string `json:"labels,omitempty"`
	Load               Load              `json:"load"`
	PricePerTaskMicros int64             `json:"pricePerTaskMicros"`
	Version            string            `json:"version,omitempty"`
	LastSeen           time.Time         `json:"lastSeen"`
	Expires            time.Time         `json:"expires"`
}

// Job status values.
const (
	JobPending   = "pending"
	JobRunning   = "running"
	JobCompleted = "completed"
	JobFailed    = "failed"
	JobCancelled = "cancelled"
)

// Task status values: the job statuses plus TaskAssigned.
const (
	TaskPending   = "pending"
	TaskAssigned  = "assigned"
	TaskRunning   = "running"
	TaskCompleted = "completed"
	TaskFailed    = "failed"
	TaskCancelled = "cancelled"
)

// CreatedJob is the 201 body of POST /v1/jobs.
type CreatedJob struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

// Bucket names where a completed job's outputs are.
type Bucket struct {
	CID string `json:"cid"`
	URL string `json:"url"`
}

// Task is one task of a job.
type Task struct {
	ID         string    `json:"id"`
	Index      int       `json:"index"`
	Status     string    `json:"status"`
	Provider   string    `json:"provider,omitempty"`
	Attempts   int       `json:"attempts"`
	ResultCID  string    `json:"resultCid,omitempty"`
	Error      string    `json:"error,omitempty"`
	Progress   float64   `json:"progress"`
	Seed       int64     `json:"seed"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
}

// Job is GET /v1/jobs/{id}.
type Job struct {
	ID         string    `json:"id"`
	Status     string    `json:"status"`
	TemplateID string    `json:"templateId"`
	Tasks      []Task    `json:"tasks"`
	Bucket     *Bucket   `json:"bucket,omitempty"`
	Reasons    []string  `json:"reasons"`
	Error      string    `json:"error,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
}

// Template is GET /v1/templates/{id}.
type Template struct {
	ID          string          `json:"id"`
	Aliases     []string        `json:"aliases,omitempty"`
	Description string          `json:"description"`
	App         json.RawMessage `json:"app"`         // executor kind, image or command
	Params      json.RawMessage `json:"params"`      // parameter schema with defaults
	Partitioner string          `json:"partitioner"` // default partitioner
	Assembler   string          `json:"assembler"`
	Resources   json.RawMessage `json:"resources"` // default resources
	Source      string          `json:"source"`    // "builtin" or the file it came from
}

// Event is one server-sent event of GET /v1/jobs/{id}/events. The SSE
// "event:" field carries Type; the data is this struct as JSON.
type Event struct {
	Seq      uint64    `json:"seq"`
	Type     string    `json:"type"` // "job", "task", "progress", "log"
	JobID    string    `json:"jobId"`
	TaskID   string    `json:"taskId,omitempty"`
	Status   string    `json:"status,omitempty"`
	Progress float64   `json:"progress,omitempty"`
	Provider string    `json:"provider,omitempty"`
	Message  string    `json:"message,omitempty"`
	Time     time.Time `json:"time"`
}

// TaskLog is one task's log in GET /v1/jobs/{id}/logs.
type TaskLog struct {
	TaskID   string `json:"taskId"`
	Index    int    `json:"index"`
	Attempt  int    `json:"attempt"`
	Provider string `json:"provider,omitempty"`
	Log      string `json:"log"`
}
