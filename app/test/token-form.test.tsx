import { cleanup, fireEvent, render, screen } from '@testing-library/react';
import { afterEach, describe, expect, it } from 'vitest';
import { TokenForm } from '../src/components/TokenForm.js';

afterEach(cleanup);

describe('TokenForm', () => {
  it('asks for a token without a complaint when none was sent', () => {
    render(<TokenForm refused="" onToken={() => {}} />);
    expect(screen.queryByTestId('token-refused')).toBeNull();
    expect(screen.getByLabelText('Token').getAttribute('aria-invalid')).toBeNull();
  });

  it('says the worker refused the token it was given', () => {
    const sent: string[] = [];
    render(<TokenForm refused="wrong" onToken={(t) => sent.push(t)} />);
    expect(screen.getByTestId('token-refused').textContent).toMatch(/the worker refused this token/i);
    const input = screen.getByLabelText('Token');
    expect(input.getAttribute('aria-invalid')).toBe('true');
    expect(document.getElementById(input.getAttribute('aria-describedby')!)).toBe(screen.getByTestId('token-refused'));
    fireEvent.change(input, { target: { value: ' right ' } });
    fireEvent.submit(input.closest('form')!);
    expect(sent).toEqual(['right']);
  });
});
