/** docs/api.md section 5: the releases and selector test vectors, shared by the unit and the HTTP suites. */
export const SECTION5_RELEASES = ['0.1.0', '0.3.0', '0.3.2-rc', '0.5.0', '0.5.2-rc', '0.7.0', '0.8.0-rc'];
export const SECTION5_VECTORS: [selector: string, expected: string | null][] = [
  ['==0.5.0', '0.5.0'],
  ['>=0.1.0', '0.7.0'],
  ['<0.4.0', '0.3.0'],
  ['>=0.3.0,<0.6.0', '0.5.0'],
  ['>=0.1.0-', '0.8.0-rc'],
  ['<0.4.0-', '0.3.2-rc'],
  ['>=0.3.0-,<0.6.0', '0.5.2-rc'],
  ['>=0.3.0,<0.6.0-', '0.5.2-rc'],
  ['==10.0.0', null],
  ['default', '0.8.0-rc'],
];
