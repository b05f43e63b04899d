package job

import (
	"context"
	"strconv"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// AttrParentWaits counts a task's waits for its parent (an SQS message attribute).
const AttrParentWaits = "fileflow-parent-waits"

// WaitForParent sends a task whose parent is not counted yet to queueURL again, delayed
// by wait, with its wait count (from rec's attributes) plus one, so that waiting uses up
// none of its receives; the caller then acknowledges rec. It reports false, sending
// nothing, once the task has waited maxWaits times.
func WaitForParent(ctx context.Context, q Sender, queueURL string, rec events.SQSMessage, wait time.Duration, maxWaits int) (bool, error) {
	waits := 0
	if a, ok := rec.MessageAttributes[AttrParentWaits]; ok && a.StringValue != nil {
		waits, _ = strconv.Atoi(*a.StringValue)
	}
	if waits >= maxWaits {
		return false, nil
	}
	_, err := q.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl: aws.String(queueURL), MessageBody: aws.String(rec.Body), DelaySeconds: int32(wait / time.Second),
		MessageAttributes: map[string]sqstypes.MessageAttributeValue{
			AttrParentWaits: {DataType: aws.String("Number"), StringValue: aws.String(strconv.Itoa(waits + 1))},
		},
	})
	if err != nil {
		return false, err
	}
	return true, nil
}
