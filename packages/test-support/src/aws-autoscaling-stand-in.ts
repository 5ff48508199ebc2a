// A stand-in for the EC2 Auto Scaling API: a real HTTP server speaking its Query protocol (form-encoded
// `Action=…`, XML answers) for one group, at the endpoint the AWS provider is pointed at. It records every call
// (with its Authorization header, to check SigV4), answers faults the test queues, and behaves like the real
// group where the provider depends on it: new instances show (Pending) as soon as the desired capacity rises,
// a terminated instance turns Terminating, ShouldDecrementDesiredCapacity lowers the desired capacity.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

const NS = 'http://autoscaling.amazonaws.com/doc/2011-01-01/';

export interface Call {
  action: string;
  params: Record<string, string>;
  authorization: string | undefined;
}
export interface Instance {
  id: string;
  state: string;
}
export interface Fault {
  status: number;
  code: string;
  /** Only for calls of this action (default: the next call of any). */
  action?: string;
}

/** The stand-in: one group, the calls it got, and faults to answer the next calls with. */
export class AutoScalingStandIn {
  calls: Call[] = [];
  faults: Fault[] = [];
  /** Called on each request before its answer is chosen (to queue a fault for it). */
  onCall: ((action: string) => void) | undefined;
  group: { exists: boolean; desired: number; max: number; instances: Instance[] } = { exists: true, desired: 0, max: 0, instances: [] };
  private server!: Server;
  constructor(readonly groupName: string) {}
  private nextId = 0x100;
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  stop(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let body = '';
    for await (const chunk of req) body += chunk;
    const params = Object.fromEntries(new URLSearchParams(body));
    const action = params.Action ?? '';
    this.calls.push({ action, params, authorization: req.headers.authorization });
    this.onCall?.(action);
    const send = (status: number, xml: string) => {
      res.writeHead(status, { 'content-type': 'text/xml', 'x-amzn-requestid': 'req-1' });
      res.end(`<?xml version="1.0"?>\n${xml}`);
    };
    const at = this.faults.findIndex((f) => !f.action || f.action === action);
    const fault = at >= 0 ? this.faults.splice(at, 1)[0] : undefined;
    if (fault) {
      const type = fault.status >= 500 ? 'Receiver' : 'Sender';
      return send(fault.status, `<ErrorResponse xmlns="${NS}"><Error><Type>${type}</Type><Code>${fault.code}</Code><Message>stand-in says ${fault.code}</Message></Error><RequestId>req-1</RequestId></ErrorResponse>`);
    }
    const meta = `<ResponseMetadata><RequestId>req-1</RequestId></ResponseMetadata>`;
    switch (action) {
      case 'DescribeAutoScalingGroups': {
        const g = this.group;
        const members = g.instances
          .map((i) => `<member><InstanceId>${i.id}</InstanceId><LifecycleState>${i.state}</LifecycleState><HealthStatus>Healthy</HealthStatus><AvailabilityZone>eu-west-1a</AvailabilityZone><ProtectedFromScaleIn>false</ProtectedFromScaleIn></member>`)
          .join('');
        const groups = g.exists && params['AutoScalingGroupNames.member.1'] === this.groupName
          ? `<member><AutoScalingGroupName>${this.groupName}</AutoScalingGroupName><MinSize>1</MinSize><MaxSize>${g.max}</MaxSize><DesiredCapacity>${g.desired}</DesiredCapacity><Instances>${members}</Instances></member>`
          : '';
        return send(200, `<DescribeAutoScalingGroupsResponse xmlns="${NS}"><DescribeAutoScalingGroupsResult><AutoScalingGroups>${groups}</AutoScalingGroups></DescribeAutoScalingGroupsResult>${meta}</DescribeAutoScalingGroupsResponse>`);
      }
      case 'SetDesiredCapacity': {
        const want = Number(params.DesiredCapacity);
        if (want > this.group.max) return send(400, `<ErrorResponse xmlns="${NS}"><Error><Type>Sender</Type><Code>ValidationError</Code><Message>above max</Message></Error></ErrorResponse>`);
        // Like the real group, the new instances show at once (Pending) after the desired capacity rises.
        while (this.group.desired < want) {
          this.group.desired++;
          this.group.instances.push({ id: `i-0000000000000${(this.nextId++).toString(16)}`, state: 'Pending' });
        }
        return send(200, `<SetDesiredCapacityResponse xmlns="${NS}">${meta}</SetDesiredCapacityResponse>`);
      }
      case 'TerminateInstanceInAutoScalingGroup': {
        const inst = this.group.instances.find((i) => i.id === params.InstanceId);
        if (!inst) return send(400, `<ErrorResponse xmlns="${NS}"><Error><Type>Sender</Type><Code>ValidationError</Code><Message>Instance Id not found</Message></Error></ErrorResponse>`);
        inst.state = 'Terminating';
        if (params.ShouldDecrementDesiredCapacity === 'true') this.group.desired--;
        return send(200, `<TerminateInstanceInAutoScalingGroupResponse xmlns="${NS}"><TerminateInstanceInAutoScalingGroupResult><Activity><ActivityId>a-1</ActivityId><AutoScalingGroupName>${this.groupName}</AutoScalingGroupName><Cause>user request</Cause><StartTime>2026-12-03T20:00:00Z</StartTime><StatusCode>InProgress</StatusCode><Progress>0</Progress></Activity></TerminateInstanceInAutoScalingGroupResult>${meta}</TerminateInstanceInAutoScalingGroupResponse>`);
      }
      default:
        return send(400, `<ErrorResponse xmlns="${NS}"><Error><Type>Sender</Type><Code>InvalidAction</Code><Message>${action}</Message></Error></ErrorResponse>`);
    }
  }
}
