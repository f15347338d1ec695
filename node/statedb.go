package node

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	pebbleds "github.com/ipfs/go-ds-pebble"
)

// stateDB persists the submitter's jobs in an embedded pebble datastore in
// the data dir (data-dir/state), so a restarted node resumes its jobs.
// Keys: /jobs/<id>/meta (jobMeta JSON) and /jobs/<id>/snapshot (the
// coordinator's export). Safe for concurrent use.
type stateDB struct {
	ds *pebbleds.Datastore
}

func openStateDB(path string) (*stateDB, error) {
	d, err := pebbleds.NewDatastore(path)
	if err != nil {
		return nil, fmt.Errorf("open state db %s: %w", path, err)
	}
	return &stateDB{ds: d}, nil
}

func (db *stateDB) Close() error { return db.ds.Close() }

func metaKey(id string) ds.Key { return ds.NewKey("/jobs/" + id + "/meta") }
func snapKey(id string) ds.Key { return ds.NewKey("/jobs/" + id + "/snapshot") }

func (db *stateDB) putMeta(id string, m *jobMeta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return db.putMetaBytes(id, b)
}

func (db *stateDB) putMetaBytes(id string, b []byte) error {
	return db.ds.Put(context.Background(), metaKey(id), b)
}

func (db *stateDB) putSnapshot(id string, snap []byte) error {
	return db.ds.Put(context.Background(), snapKey(id), snap)
}

func (db *stateDB) deleteJob(id string) error {
	ctx := context.Background()
	if err := db.ds.Delete(ctx, metaKey(id)); err != nil {
		return err
	}
	return db.ds.Delete(ctx, snapKey(id))
}

// loadJobs returns every persisted job's metadata and snapshot by ID.
func (db *stateDB) loadJobs() (map[string]*jobMeta, map[string][]byte, error) {
	res, err := db.ds.Query(context.Background(), query.Query{Prefix: "/jobs/"})
	if err != nil {
		return nil, nil, err
	}
	defer res.Close()
	metas, snaps := map[string]*jobMeta{}, map[string][]byte{}
	for r := range res.Next() {
		if r.Error != nil {
			return nil, nil, r.Error
		}
		parts := strings.Split(strings.TrimPrefix(r.Key, "/jobs/"), "/")
		if len(parts) != 2 {
			continue
		}
		switch parts[1] {
		case "meta":
			var m jobMeta
			if err := json.Unmarshal(r.Value, &m); err != nil {
				return nil, nil, fmt.Errorf("job %s metadata: %w", parts[0], err)
			}
			metas[parts[0]] = &m
		case "snapshot":
			snaps[parts[0]] = r.Value
		}
	}
	return metas, snaps, nil
}
