/**
 * Colour only where it renders: a colour terminal, unless NO_COLOR says
 * otherwise; FORCE_COLOR forces it (also into a pipe), as in Node itself,
 * where FORCE_COLOR takes precedence over NO_COLOR.
 */
export function colourEnabled(stream: NodeJS.WriteStream = process.stdout): boolean {
  const force = process.env.FORCE_COLOR;
  if (force !== undefined) return force !== '0' && force !== 'false';
  if (process.env.NO_COLOR) return false;
  return stream.isTTY === true && stream.hasColors();
}

export type Colour = 'red' | 'yellow' | 'green' | 'bold' | 'dim';
const SGR: Record<Colour, string> = { red: '31', yellow: '33', green: '32', bold: '1', dim: '2' };

/** Wraps `text` in an SGR colour when `on`, else returns it unchanged. */
export function paint(text: string, colour: Colour, on: boolean): string {
  return on ? `\x1b[${SGR[colour]}m${text}\x1b[0m` : text;
}
