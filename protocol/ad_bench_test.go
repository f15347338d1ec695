package protocol

import (
	"testing"
	"time"

	"github.com/swarmgen/swarmgen/protocol/pb"
)

// BenchmarkVerifyAds checks the 99 ads a node joining a 100-node pool
// pulls, one by one and as one batch.
//
//	go test -run '^$' -bench VerifyAds ./protocol
func BenchmarkVerifyAds(b *testing.B) {
	now := time.Now()
	ads := make([]*pb.SignedAd, 99)
	for i := range ads {
		k, id := testKey(b)
		s, err := SignAd(k, validAd(id, now))
		if err != nil {
			b.Fatal(err)
		}
		ads[i] = s
	}
	b.Run("one-by-one", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			for _, s := range ads {
				if _, err := VerifyAd(s, "", "p", now); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*len(ads)), "µs/ad")
	})
	b.Run("batch", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			_, errs := VerifyAds(ads, "", "p", now)
			for _, err := range errs {
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*len(ads)), "µs/ad")
	})
}
