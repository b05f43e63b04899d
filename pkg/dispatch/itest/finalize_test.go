package itest

import (
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
)

// A finalize task that finds the job leased by another finalizer comes back when that
// lease ends, not 15 minutes later: a finalizer that died holds the job's report and
// notification back by its lease only (the chaos run found a 15-minute wait keeping the
// jobs queue busy long after every job was reported).
func TestFinalizeBusyComesBackWhenTheLeaseEnds(t *testing.T) {
	s := newStack(t)
	s.put("busy/a.txt", "a")
	s.put("busy/b.txt", "b")
	id := s.submit(job.Spec{Kind: job.KindPrefix, Key: "busy/"})
	var finalize *msg
	for i := 0; i < 100 && finalize == nil; i++ {
		if m := s.q.pop(jobsQueue); m != nil {
			if p, err := job.DecodeFanoutTask([]byte(m.body)); err == nil && p.Step == job.StepFinalize {
				finalize = m
				continue
			}
			s.deliver(jobsQueue, m)
			continue
		}
		if m := s.q.pop(tasksQueue); m != nil {
			s.deliver(tasksQueue, m)
		}
	}
	require.NotNil(t, finalize, "the job finished and asked for its finalize")
	require.Equal(t, ledger.JobComplete, s.jobRecord(id).Status)

	// Another finalizer took the lease for 40 s, and died.
	_, ok, err := s.store.ClaimFinalize(s.ctx, id, time.Now(), 40*time.Second)
	require.NoError(t, err)
	require.True(t, ok)
	s.deliver(jobsQueue, finalize)
	again := s.q.take(jobsQueue)
	require.Len(t, again, 1, "the finalize task is sent again")
	assert.InDelta(t, 41, again[0].delay, 3, "it comes back when the lease ends (seconds)")

	// Once the lease has ended, it reports the job.
	_, err = s.db.Client.UpdateItem(s.ctx, leaseEndsNow(s.store.Table(), id))
	require.NoError(t, err)
	s.deliver(jobsQueue, again[0])
	j, _, err := s.store.GetJob(s.ctx, id)
	require.NoError(t, err)
	assert.True(t, j.Notified)
}

// leaseEndsNow moves the job's finalize lease into the past (as time passing would).
func leaseEndsNow(table, id string) *dynamodb.UpdateItemInput {
	return &dynamodb.UpdateItemInput{TableName: aws.String(table),
		Key: map[string]types.AttributeValue{
			ledger.AttrPK: &types.AttributeValueMemberS{Value: "J#" + id}, ledger.AttrSK: &types.AttributeValueMemberS{Value: "job"}},
		UpdateExpression:          aws.String("SET lease_until = :past"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":past": &types.AttributeValueMemberN{Value: "1"}}}
}
