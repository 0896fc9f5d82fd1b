package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/rbee-dev/rbee/schemas"
)

// HiveClient calls the endpoints of hives' micro services.
type HiveClient struct {
	nc   *nats.Conn
	subj schemas.Subjects
}

// NewHiveClient returns a client for the hives under subj's prefix.
func NewHiveClient(nc *nats.Conn, subj schemas.Subjects) *HiveClient {
	return &HiveClient{nc: nc, subj: subj}
}

// Spawn asks hive to start a worker of model.
func (c *HiveClient) Spawn(ctx context.Context, hive string, req schemas.SpawnRequest) (schemas.SpawnReply, error) {
	var reply schemas.SpawnReply
	return reply, c.call(ctx, hive, schemas.HiveSpawn, req, &reply)
}

// Stop asks hive to stop one of its workers; it answers once the process is
// gone.
func (c *HiveClient) Stop(ctx context.Context, hive string, req schemas.StopRequest) (schemas.StopReply, error) {
	var reply schemas.StopReply
	return reply, c.call(ctx, hive, schemas.HiveStop, req, &reply)
}

// List asks hive for its workers and models.
func (c *HiveClient) List(ctx context.Context, hive string) (schemas.HiveListReply, error) {
	var reply schemas.HiveListReply
	return reply, c.call(ctx, hive, schemas.HiveList, struct{}{}, &reply)
}

// Drain asks hive to take no more spawns, or to take them again.
func (c *HiveClient) Drain(ctx context.Context, hive string, req schemas.DrainRequest) (schemas.DrainReply, error) {
	var reply schemas.DrainReply
	return reply, c.call(ctx, hive, schemas.HiveDrain, req, &reply)
}

// Shutdown asks hive to stop its workers and exit; it answers before it
// begins.
func (c *HiveClient) Shutdown(ctx context.Context, hive string, req schemas.ShutdownRequest) (schemas.ShutdownReply, error) {
	var reply schemas.ShutdownReply
	return reply, c.call(ctx, hive, schemas.HiveShutdown, req, &reply)
}

// call sends one request and decodes the answer into reply. A hive's
// refusal comes back as the *schemas.Error it sent, code and all; a hive
// that does not answer is bus_unavailable.
func (c *HiveClient) call(ctx context.Context, hive, endpoint string, req, reply any) error {
	if !schemas.ValidID(hive) {
		return schemas.Errorf(schemas.CodeInvalidRequest, "hive ID %q is not valid", hive)
	}
	data, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode %s request: %w", endpoint, err)
	}
	subject := c.subj.HiveControl(hive, endpoint)
	m, err := c.nc.RequestWithContext(ctx, subject, data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return schemas.Errorf(schemas.CodeNotFound, "no hive %s answers on %s", hive, subject)
	case err != nil:
		return schemas.Wrap(schemas.CodeBusUnavailable, fmt.Errorf("hive %s %s: %w", hive, endpoint, err))
	}
	if code := m.Header.Get(micro.ErrorCodeHeader); code != "" {
		var er schemas.ErrorResponse
		if json.Unmarshal(m.Data, &er) == nil && er.Error.Code != "" {
			return &er.Error
		}
		return schemas.Errorf(schemas.Code(code), "%s", m.Header.Get(micro.ErrorHeader))
	}
	if err := json.Unmarshal(m.Data, reply); err != nil {
		return schemas.Errorf(schemas.CodeInternal, "hive %s %s: undecodable answer %q: %v", hive, endpoint, m.Data, err)
	}
	return nil
}
