// Line charts as inline SVG: one or more series over time, y from 0 to the largest value (or a fixed max).

const NS = 'http://www.w3.org/2000/svg';
const W = 480;
const H = 140;
const PAD = { l: 60, r: 8, t: 10, b: 20 };
const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2'];

export interface Series {
  name: string;
  points: Array<[number, number]>; // [unix ms, value]
}

function el(tag: string, attrs: Record<string, string | number>, text?: string): SVGElement {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

export function lineChart(title: string, series: Series[], opts: { max?: number; unit?: string } = {}): HTMLElement {
  const fig = document.createElement('figure');
  fig.className = 'chart';
  const cap = document.createElement('figcaption');
  cap.textContent = title;
  fig.appendChild(cap);
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': title }) as SVGSVGElement;
  fig.appendChild(svg);
  const all = series.flatMap((s) => s.points).filter(([t, v]) => Number.isFinite(t) && Number.isFinite(v));
  if (all.length === 0) {
    svg.appendChild(el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty' }, 'no data yet'));
    return fig;
  }
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]));
  // At least 1, so an all-zero series draws as a flat line at the bottom under a readable scale.
  const vmax = opts.max ?? Math.max(1, ...all.map((p) => p[1]));
  const x = (t: number) => PAD.l + ((t - t0) / Math.max(1, t1 - t0)) * (W - PAD.l - PAD.r);
  const y = (v: number) => H - PAD.b - (Math.min(v, vmax) / vmax) * (H - PAD.t - PAD.b);
  svg.appendChild(el('line', { x1: PAD.l, y1: H - PAD.b, x2: W - PAD.r, y2: H - PAD.b, class: 'axis' }));
  svg.appendChild(el('line', { x1: PAD.l, y1: PAD.t, x2: PAD.l, y2: H - PAD.b, class: 'axis' }));
  const fmt = (v: number) => `${Number.isInteger(v) ? v : v.toFixed(1)}${opts.unit ?? ''}`;
  svg.appendChild(el('text', { x: PAD.l - 4, y: PAD.t + 8, 'text-anchor': 'end', class: 'tick' }, fmt(vmax)));
  svg.appendChild(el('text', { x: PAD.l - 4, y: H - PAD.b, 'text-anchor': 'end', class: 'tick' }, fmt(0)));
  svg.appendChild(el('text', { x: PAD.l, y: H - 4, class: 'tick' }, new Date(t0).toLocaleTimeString()));
  svg.appendChild(el('text', { x: W - PAD.r, y: H - 4, 'text-anchor': 'end', class: 'tick' }, new Date(t1).toLocaleTimeString()));
  series.forEach((s, i) => {
    const pts = s.points.filter(([t, v]) => Number.isFinite(t) && Number.isFinite(v)).sort((a, b) => a[0] - b[0]);
    if (pts.length === 0) return;
    const color = COLORS[i % COLORS.length]!;
    const d = pts.map(([t, v], j) => `${j ? 'L' : 'M'}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    svg.appendChild(el('path', { d, fill: 'none', stroke: color, 'stroke-width': 1.5, class: 'series', 'data-series': s.name }));
    if (pts.length === 1) svg.appendChild(el('circle', { cx: x(pts[0]![0]), cy: y(pts[0]![1]), r: 2.5, fill: color }));
  });
  if (series.length > 1) {
    const legend = document.createElement('div');
    legend.className = 'legend';
    series.forEach((s, i) => {
      const item = document.createElement('span');
      item.style.setProperty('--c', COLORS[i % COLORS.length]!);
      item.textContent = s.name;
      legend.appendChild(item);
    });
    fig.appendChild(legend);
  }
  return fig;
}
